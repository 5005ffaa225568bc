//! Images as files: import of an OCI image layout tar or a `docker save`
//! tar, and export of stored images as an OCI image layout tar, so berth
//! works with no registry at all.
//!
//! An import goes through the same gates as a pull: every blob is written
//! through a content [`Writer`](crate::content::Writer) and verified against
//! its digest before it is committed, then
//! [`Images::unpack_and_record`] unpacks the layers into snapshots exactly as
//! a pull does. Nothing in the archive is extracted anywhere but into the
//! content store and a private scratch directory, and only regular files
//! with plain relative names are read from it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::content::{self, Digest};
use crate::images::{
    self, platform_name, Descriptor, Document, Images, Platform, Progress, Resolved,
};
use crate::registry::MAX_MANIFEST;

/// Errors of import and export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot import the archive: {0}")]
    Archive(String),
    #[error("cannot import the archive: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Images(#[from] images::Error),
    #[error(transparent)]
    Content(#[from] content::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// `index.json` or `manifest.json` of an archive, refused past the cap on
/// manifests rather than read whole.
fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST + 1).read_to_end(&mut bytes))
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_MANIFEST {
        return Err(Error::Archive(format!(
            "{} is larger than the {MAX_MANIFEST}-byte limit",
            path.display()
        )));
    }
    Ok(bytes)
}

io_context!(io_err, Error);

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A name as berth records it, or an archive error saying why it is none.
fn canonical(name: &str) -> Result<String> {
    images::canonical_name(name)
        .ok_or_else(|| Error::Archive(format!("invalid image name {name:?}")))
}

/// The archive's entry name as a plain relative path, or `None` for names
/// that are absolute or climb (`..`): those are never read.
fn plain(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Reads the archive: `blobs/sha256/<hex>` straight into the content store
/// (verified), every other regular file into `scratch`.
fn read_archive(images: &Images, archive: &Path, scratch: &Path) -> Result<()> {
    let file = File::open(archive).map_err(io_err("open", archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    let entries = tar
        .entries()
        .map_err(|e| Error::Archive(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Archive(format!("corrupt tar: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| Error::Archive(format!("corrupt tar: {e}")))?
            .into_owned();
        let Some(path) = plain(&raw) else {
            return Err(Error::Archive(format!(
                "entry {} is not a plain relative path",
                raw.display()
            )));
        };
        let size = entry.size();
        if let Ok(rest) = path.strip_prefix("blobs/sha256") {
            let digest = Digest::parse(&format!("sha256:{}", rest.display()))?;
            if images.content.exists(&digest) {
                continue;
            }
            let mut writer = images
                .content
                .writer(&content::unique_ref(&digest), &digest, size)?;
            writer.truncate()?;
            io::copy(&mut entry, &mut writer)
                .map_err(|e| Error::Archive(format!("reading {}: {e}", path.display())))?;
            writer.commit()?;
        } else {
            let dest = scratch.join(&path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            }
            let mut out = File::create(&dest).map_err(io_err("create", &dest))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| Error::Archive(format!("reading {}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// Moves a scratch file into the content store under its digest, verified
/// like any blob; returns its digest and size.
fn store_file(images: &Images, path: &Path) -> Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut file = File::open(path).map_err(io_err("open", path))?;
    let size = io::copy(&mut file, &mut HashWriter(&mut hasher)).map_err(io_err("read", path))?;
    let digest = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize())))?;
    if !images.content.exists(&digest) {
        let mut writer = images
            .content
            .writer(&content::unique_ref(&digest), &digest, size)?;
        writer.truncate()?;
        let mut file = File::open(path).map_err(io_err("open", path))?;
        io::copy(&mut file, &mut writer).map_err(io_err("read", path))?;
        writer.commit()?;
    }
    Ok((digest, size))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Imports every image of the archive at `archive` (OCI layout tar or
/// `docker save` tar). `name` names the image when the archive holds one
/// (and must, when the archive names none).
pub async fn import(
    images: &Images,
    archive: &Path,
    name: Option<String>,
    platform: &Platform,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Vec<images::ImageRecord>> {
    let _working = images.gc_lock.read().await;
    let scratch = archive.with_extension("d");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(io_err("create", &scratch))?;
    let result = import_from(images, archive, &scratch, name, platform, progress).await;
    let _ = fs::remove_dir_all(&scratch);
    result
}

async fn import_from(
    images: &Images,
    archive: &Path,
    scratch: &Path,
    name: Option<String>,
    platform: &Platform,
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<Vec<images::ImageRecord>> {
    {
        let (images, archive, scratch) =
            (images.clone(), archive.to_path_buf(), scratch.to_path_buf());
        tokio::task::spawn_blocking(move || read_archive(&images, &archive, &scratch))
            .await
            .map_err(|e| Error::Archive(format!("reader failed: {e}")))??;
    }
    let mut resolved = Vec::new();
    if scratch.join("index.json").is_file() {
        let bytes = read_capped(&scratch.join("index.json"))?;
        // The layout's index is an image index: the one type for both.
        let index = berth_oci::image::parse_index(&bytes)
            .map_err(|e| Error::Archive(format!("invalid index.json: {e}")))?;
        let manifests = index.manifests().clone();
        if name.is_some() && manifests.len() != 1 {
            return Err(Error::Archive(format!(
                "a name was given, but the archive holds {} images",
                manifests.len()
            )));
        }
        for entry in manifests {
            let image_name = match &name {
                Some(n) => n.clone(),
                None => entry
                    .annotations()
                    .iter()
                    .flat_map(|a| a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)))
                    .next()
                    .cloned()
                    .ok_or_else(|| {
                        Error::Archive(format!("image {} has no name; give one", entry.digest()))
                    })?,
            };
            resolved.push(resolve_stored(
                images,
                &canonical(&image_name)?,
                entry,
                platform,
            )?);
        }
    } else if scratch.join("manifest.json").is_file() {
        let bytes = read_capped(&scratch.join("manifest.json"))?;
        let list: Vec<DockerImage> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Archive(format!("invalid manifest.json: {e}")))?;
        for image in list {
            let image_name = match (&name, image.repo_tags.first()) {
                (Some(n), _) | (None, Some(n)) => n.clone(),
                (None, None) => {
                    return Err(Error::Archive(format!(
                        "image {} has no RepoTags; give a name",
                        image.config
                    )))
                }
            };
            resolved.push(docker_image(
                images,
                scratch,
                &canonical(&image_name)?,
                &image,
            )?);
        }
    } else {
        return Err(Error::Archive(
            "neither index.json (OCI layout) nor manifest.json (docker save) in it".into(),
        ));
    }
    let mut records = Vec::new();
    for r in resolved {
        records.push(
            images
                .unpack_and_record(r, None, true, progress.clone())
                .await?,
        );
    }
    Ok(records)
}

/// An index entry whose blobs are in the content store, resolved to the
/// platform's manifest.
fn resolve_stored(
    images: &Images,
    name: &str,
    entry: Descriptor,
    platform: &Platform,
) -> Result<Resolved> {
    let digest = images.parse_digest(name, entry.digest().as_ref())?;
    let top = images.read_small(name, "manifest", &digest, entry.size(), MAX_MANIFEST)?;
    let document = images.parse_document(name, &digest, &top)?;
    let mut target = entry;
    target.set_annotations(None);
    target.set_platform(None);
    let (manifest_desc, manifest) = match document {
        Document::Index(index) => {
            let chosen = images::choose(name, index.manifests(), platform)
                .map_err(|_| {
                    Error::Archive(format!(
                        "{name}: no manifest for platform {}",
                        platform_name(platform)
                    ))
                })?
                .clone();
            let digest = images.parse_digest(name, chosen.digest().as_ref())?;
            let bytes =
                images.read_small(name, "manifest", &digest, chosen.size(), MAX_MANIFEST)?;
            (chosen, images.parse_manifest(name, &digest, &bytes)?)
        }
        Document::Manifest(manifest) => (target.clone(), *manifest),
    };
    Ok(Resolved {
        reference: name.to_string(),
        name: name.to_string(),
        target,
        manifest_desc,
        manifest,
        platform: platform.clone(),
    })
}

/// A `docker save` image: config and layer tars into the content store, and
/// a Docker schema 2 manifest written for them.
fn docker_image(
    images: &Images,
    scratch: &Path,
    name: &str,
    image: &DockerImage,
) -> Result<Resolved> {
    let file = |rel: &str| -> Result<PathBuf> {
        plain(Path::new(rel))
            .map(|p| scratch.join(p))
            .ok_or_else(|| Error::Archive(format!("{rel:?} is not a plain relative path")))
    };
    // Newer docker writes blobs/sha256/<hex> paths, which are in the store.
    let stored = |rel: &str| -> Result<Option<(Digest, u64)>> {
        match rel.strip_prefix("blobs/sha256/") {
            Some(hex) => {
                let digest = Digest::parse(&format!("sha256:{hex}"))?;
                let size = images.content.info(&digest)?.size;
                Ok(Some((digest, size)))
            }
            None => Ok(None),
        }
    };
    let (config_digest, config_size) = match stored(&image.config)? {
        Some(found) => found,
        None => store_file(images, &file(&image.config)?)?,
    };
    let config_bytes = images.read_small(
        name,
        "config",
        &config_digest,
        config_size,
        images::MAX_CONFIG,
    )?;
    // The record's platform is the config's; a config that does not read
    // fails the unpack that follows, with the reason.
    let platform = match berth_oci::image::parse_config(&config_bytes) {
        Ok(config) => {
            let os = config.os().to_string();
            let os = if os.is_empty() { "linux" } else { &os };
            let architecture = config.architecture().to_string();
            let variant = config.variant().clone().unwrap_or_default();
            images::platform(os, &architecture, &variant)
        }
        Err(_) => images::platform("linux", "", ""),
    };
    let mut layers = Vec::new();
    for layer in &image.layers {
        let (digest, size) = match stored(layer)? {
            Some(found) => found,
            None => store_file(images, &file(layer)?)?,
        };
        layers.push(json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
            "digest": digest.to_string(),
            "size": size,
        }));
    }
    let media_type = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Archive(e.to_string()))?;
    let digest = Digest::of(&bytes);
    images.content.write_bytes(&digest, &bytes)?;
    let desc = images::descriptor(media_type, &digest, bytes.len() as u64);
    Ok(Resolved {
        reference: name.to_string(),
        name: name.to_string(),
        target: desc.clone(),
        manifest_desc: desc,
        manifest: images.parse_manifest(name, &digest, &bytes)?,
        platform,
    })
}

/// Writes the images `names` as one OCI image layout tar to `out`: each
/// image's platform manifest, config and layers, named in `index.json`.
pub fn export(images: &Images, names: &[String], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    let add_bytes = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
            .map_err(|e| Error::Archive(format!("writing {path}: {e}")))
    };
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for name in names {
        let record = images.get(name)?;
        let mut blobs = vec![record.manifest.digest(), record.config.digest()];
        blobs.extend(record.layers.iter().map(|l| l.digest()));
        for digest in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let digest = Digest::parse(digest.as_ref())?;
            let info = images.content.info(&digest)?;
            let file = images.content.open_blob(&digest)?;
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(info.size);
            let path = format!("blobs/sha256/{}", digest.hex());
            tar.append_data(&mut h, &path, file.take(info.size))
                .map_err(|e| Error::Archive(format!("writing {path}: {e}")))?;
        }
        let media_type = match record.manifest.media_type().as_ref() {
            "" => "application/vnd.oci.image.manifest.v1+json",
            recorded => recorded,
        };
        entries.push(json!({
            "mediaType": media_type,
            "digest": record.manifest.digest(),
            "size": record.manifest.size(),
            "platform": {
                "os": record.platform.os(),
                "architecture": record.platform.architecture(),
            },
            "annotations": {
                REF_NAME: record.name,
                CONTAINERD_NAME: record.name,
            },
        }));
    }
    let index = json!({"schemaVersion": 2, "manifests": entries});
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::Archive(e.to_string()))?;
    add_bytes(&mut tar, "index.json", &bytes)?;
    tar.into_inner()
        .map_err(|e| Error::Archive(format!("finishing the archive: {e}")))?
        .flush()
        .map_err(|e| Error::Archive(format!("finishing the archive: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_are_read() {
        assert_eq!(
            plain(Path::new("./blobs/sha256/ab")),
            Some(PathBuf::from("blobs/sha256/ab"))
        );
        assert_eq!(plain(Path::new("../x")), None);
        assert_eq!(plain(Path::new("/etc/passwd")), None);
        assert_eq!(plain(Path::new("a/../../b")), None);
    }
}
